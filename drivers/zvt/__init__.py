"""ZVT: the ECR interface of German card payment terminals (serial or TCP)."""
