"""pygls glue only: the server, the protocol guard, documents, and thin feature handlers."""
