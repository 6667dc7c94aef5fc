"""The runs branch: records, the recorder that writes them, requests, status, retention."""
