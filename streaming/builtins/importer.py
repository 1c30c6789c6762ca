"""A file importer for text and for local files inside allowed directories.

- ``value``: the text itself (``mimeType`` default ``text/plain``);
- ``data``: base64 bytes (``mimeType`` default: guessed, else ``application/octet-stream``);
- ``url``: ``file:///abs/path`` or a path relative to the first allowed directory. Only
  regular files whose real path (symlinks resolved) lies inside one of the allowed
  directories are read; anything else, and every other URL scheme, is refused. The
  allowed directories come from the config (``allowed_dirs``) or the environment
  (``STREAMING_IMPORT_DIRS``, separated by ``os.pathsep``); none means no file is readable.

Config: ``allowed_dirs`` (list of paths), ``max_bytes`` (default 10 MiB).
"""

from __future__ import annotations

import base64
import mimetypes
import os
import stat
from urllib.parse import unquote, urlsplit

from streaming.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from streaming.model import MimeTypes
from streaming.plugin.file_importer import FileImporter
from streaming.plugin.inputs import FileImportPluginInput
from streaming.plugin.outputs import RawDataPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest

__all__ = ["LocalFileImporter"]


class LocalFileImporter(FileImporter):
    """Imports text, base64 bytes, or a local file from an allowed directory."""

    def allowed_dirs(self) -> list[str]:
        dirs = self.config.get("allowed_dirs")
        if dirs is None:
            env = os.environ.get("STREAMING_IMPORT_DIRS", "")
            dirs = [d for d in env.split(os.pathsep) if d]
        return [os.path.realpath(str(d)) for d in dirs]

    def max_bytes(self) -> int:
        return int(self.config.get("max_bytes", 10 << 20))

    def resolve(self, url: str) -> str:
        """The real path ``url`` names, if it may be read.

        Raises:
            InvalidRequestError: not a file URL or path.
            ForbiddenError: outside every allowed directory (or none is configured).
            NotFoundError: no such regular file.
        """
        allowed = self.allowed_dirs()
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidRequestError("only local file: URLs can be imported")
            path = unquote(parts.path)
        elif parts.scheme in ("",):
            path = url
        else:
            raise InvalidRequestError(
                f"URL scheme {parts.scheme!r} is not imported by this importer",
                suggestion="send the bytes as base64 'data', or a file: URL inside an allowed directory",
            )
        if "\0" in path:
            raise InvalidRequestError("the path holds a NUL character")
        if not allowed:
            raise ForbiddenError(
                "this importer reads no local files", suggestion="configure allowed_dirs (or STREAMING_IMPORT_DIRS)"
            )
        if not os.path.isabs(path):
            path = os.path.join(allowed[0], path)
        real = os.path.realpath(path)
        if not any(os.path.commonpath([real, d]) == d for d in allowed):
            raise ForbiddenError(f"{url!r} is outside the allowed directories")
        try:
            st = os.stat(real)
        except OSError:
            raise NotFoundError(f"no file {url!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"{url!r} is not a regular file")
        if st.st_size > self.max_bytes():
            raise PayloadTooLargeError(f"{url!r} is over {self.max_bytes()} bytes")
        return real

    def run(self, request: PluginRequest[FileImportPluginInput]) -> InvocableResponse[RawDataPluginOutput]:
        data = request.data
        if data is None:
            raise InvalidRequestError("nothing to import")
        if data.value is not None:
            raw = data.value.encode()
            mime = data.mime_type or MimeTypes.TXT
        elif data.data is not None:
            raw = base64.b64decode(data.data, validate=True)
            mime = data.mime_type or "application/octet-stream"
        elif data.url is not None:
            path = self.resolve(data.url)
            with open(path, "rb") as f:
                raw = f.read(self.max_bytes() + 1)
            mime = data.mime_type or mimetypes.guess_type(path)[0] or "application/octet-stream"
        else:
            raise InvalidRequestError("give one of 'value', 'data' or 'url'")
        if len(raw) > self.max_bytes():
            raise PayloadTooLargeError(f"the import is over {self.max_bytes()} bytes")
        return InvocableResponse(
            data=RawDataPluginOutput(data=base64.b64encode(raw).decode("ascii"), mime_type=mime)
        )
