"""Projects, classes and images: upload, import, intake checks, duplicates and groups, trash."""
