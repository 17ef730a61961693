"""Application services: one function per command; they do the I/O around the pure core."""
