"""Use cases over the domain and the store, shared by the HTTP API and the watcher."""
