import shutil
import socket
import tempfile
from pathlib import Path

from config.settings.base import wake_directory
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


def test_a_sqlite_databases_sockets_lie_beside_it_while_their_longest_path_fits():
    root = Path(tempfile.mkdtemp(dir="/tmp"))  # short, wherever the clone lies
    try:

        def directory_of(length: int) -> Path:
            """The sockets' directory of a database whose own would be `length` long."""
            name = root / ("d" * (length - len(str(root)) - 1 - len("-wake")))
            return wake_directory({"ENGINE": "django.db.backends.sqlite3", "NAME": str(name)})

        longest = directory_of(wake.MAX_DIRECTORY)
        assert longest.parent == root and len(str(longest)) == wake.MAX_DIRECTORY
        assert directory_of(wake.MAX_DIRECTORY + 1).parent == Path(tempfile.gettempdir())
        # The longest channel, with a pid of Linux's longest, binds there.
        listener = wake.Listener(longest, "queue")
        listener.close()
        assert len(str(longest / f"queue-{2**22}")) < 107
    finally:
        shutil.rmtree(root)
