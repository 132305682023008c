"""Technician and office functions: diagnostics, key tools, device bring-up."""
