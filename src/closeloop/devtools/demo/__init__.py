"""``closeloop demo``: a firm's quarter of project to cash on the local systems."""
