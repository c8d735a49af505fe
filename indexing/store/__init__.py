"""The read and search side of an index bundle: what recognition and the server use (builders: indexing/)."""
