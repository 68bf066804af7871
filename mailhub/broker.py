"""kombu's filesystem transport with files that other processes only ever see whole.

kombu 5.7's filesystem channel creates a message file under its final ``.msg`` name and
writes the payload afterwards, and its reader takes files without waiting for the
writer's lock. A worker that polls in between reads an empty file, and the
JSONDecodeError stops the Celery worker. Its exchange table has the same gap: the first
queue binding creates the file empty and a reader may get its lock before the writer.
Here both files are written under another name first and then renamed or linked into
place, which is atomic within one folder on POSIX. The embedded default broker of
project/settings.py uses this transport.
"""
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TEMPORARY_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """Create a missing exchange table whole with this binding, or add the binding as kombu does."""
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        if not table.exists() and create_whole(table, str_to_bytes(dumps([binding]))):
            return
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _put(self, queue, payload, **kwargs):
        """Write the payload under a temporary name, then rename it into the queue."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        # The reader only takes names of the form "<time>_<uuid>.<queue>.msg".
        temporary_path = os.path.join(self.data_folder_out, f".{name}{TEMPORARY_SUFFIX}")
        try:
            with open(temporary_path, "wb", buffering=0) as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(temporary_path, path)
        except OSError as error:
            raise ChannelError(f"cannot add message file {path!r} to the broker folder: {error}") from error


class Transport(filesystem.Transport):
    Channel = Channel


def create_whole(path, content):
    """Create ``path`` holding ``content``; return False when another process created it first."""
    temporary_path = path.with_name(f".{path.name}.{uuid.uuid4()}{TEMPORARY_SUFFIX}")
    try:
        temporary_path.write_bytes(content)
        os.link(temporary_path, path)
    except FileExistsError:
        return False
    except OSError as error:
        raise ChannelError(f"cannot create {path}: {error}") from error
    finally:
        temporary_path.unlink(missing_ok=True)
    return True
