"""The ports on their drivers: cash (ccTalk), card (ZVT), key (PC/SC), printer (ESC/POS) and
head office (the sync client). They translate bytes and driver errors into the engine's events."""
