"""Image files under CACHE_PATH, written so that no reader sees a partial one."""

import os
import tempfile
from typing import Any

from django.core.files.storage import FileSystemStorage

TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage that writes a temp file beside the target and links it.

    Django's own storage writes in place, so a reader (or a crash) could meet
    half a file. Here the bytes go to a temp file in the same directory, are
    flushed to disk, and only then get their name with a hard link, which also
    never replaces an existing file. A crash leaves at most a temp file, which
    the prune removes as it does any file no fetch names, once older than
    STRAY_FILE_AGE (a younger one may be a save in progress).
    """

    def _save(self, name: str, content: Any) -> str:
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        os.makedirs(directory, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as temp_file:
                if hasattr(content, "temporary_file_path"):
                    content.seek(0)
                for chunk in content.chunks():
                    temp_file.write(chunk)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.chmod(temp_path, self.file_permissions_mode or 0o644)
            while True:
                try:
                    os.link(temp_path, full_path)
                    break
                except FileExistsError:
                    name = self.get_available_name(name)
                    full_path = self.path(name)
        finally:
            os.unlink(temp_path)
        return str(name).replace("\\", "/")
