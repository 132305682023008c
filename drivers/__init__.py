"""Hardware drivers: each protocol as a pure codec, a thin transport and a device class,
with a simulator that speaks the same bytes. Nothing here imports the kiosk package."""
