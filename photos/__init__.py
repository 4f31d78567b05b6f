"""Your own photos: camera files to posed images, camera checks, renders and videos from new cameras."""
