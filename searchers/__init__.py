"""Search strategies, one module each; they import only autoprompt's public API."""
