"""What both services serve with: the front door (HTTP server, limits, deadlines, drain), the lifecycle that
signals drive, the page and its files, the settings both share, the settings layer (option fields, flags,
environment, logging) and the ``visionpool`` command's dispatcher. It imports only the wire contract from
the client; the worker and the proxy import it, never each other.
"""
