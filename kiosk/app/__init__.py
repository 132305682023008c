"""The application layer: the composition root that builds a running automat from a site."""
