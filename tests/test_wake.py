import socket

from imagecache import wake


def test_a_listener_gets_what_is_sent_on_its_channel_only(tmp_path):
    listener = wake.Listener(tmp_path, "fetch")
    try:
        assert wake.send(tmp_path, "fetch", b"42") == 1
        assert wake.send(tmp_path, "queue", b"7") == 0
        assert listener.wait(10) == [b"42"]
        assert listener.wait(0) == []
    finally:
        listener.close()


def test_the_socket_of_a_process_gone_is_removed(tmp_path):
    dead = tmp_path / "fetch-1"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()
    assert wake.send(tmp_path, "fetch", b"1") == 0
    assert not dead.exists()


def test_sending_where_nobody_listens_is_nothing(tmp_path):
    assert wake.send(tmp_path / "none", "fetch", b"1") == 0
