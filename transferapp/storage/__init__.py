"""Where bytes live: blobs on disk or in a bucket, request bodies, zips read and written."""
