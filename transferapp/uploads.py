"""An upload handler that stops reading a request body once a file passes the size cap,
instead of writing gigabytes to a temporary file first and refusing afterwards."""
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


class SizeCapUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.MAX_IMPORT_MB * 1024 * 1024:
            raise StopUpload(connection_reset=True)
        return raw_data  # pass the bytes on to the next handler

    def file_complete(self, file_size):
        return None  # the next handlers build the file object
