"""The automat's rules, pure: money, events, the site, the top-up session."""
