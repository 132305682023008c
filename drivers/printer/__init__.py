"""ESC/POS thermal receipt printer: the driver (on python-escpos) and a simulator on a pty."""
