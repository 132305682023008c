"""Head-office sync: the wire protocol, the kiosk's client and the reference server.
Nothing here imports the kiosk package."""
