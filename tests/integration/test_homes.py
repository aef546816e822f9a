"""Two daemons with different homes never see or touch each other's instances."""


def test_two_homes_side_by_side(make_daemon):
    a, b = make_daemon().start(), make_daemon().start()
    a.ok("create", "100", "--name", "same", "--start")
    b.ok("create", "100", "--name", "same", "--start")    # same CTID and name in another home
    assert a.sh("same", "echo a > /root/who; cat /root/who") == "a"
    assert b.sh("same", "cat /root/who 2>/dev/null || echo none") == "none"
    assert a.runc_containers() == ["100"] and b.runc_containers() == ["100"]
    assert a.cgroups.parent != b.cgroups.parent
    b.ok("destroy", "same", "--force")
    assert a.client.instance("same")["state"] == "running"
    assert a.sh("same", "cat /root/who") == "a"
