"""Everything that exists only to simulate or demonstrate: the simulators' process (`kiosk
simulate`) and its control interface, the in-process rig, fakes, scripted customers, the
developer's panel. Nothing on a customer's automat imports it."""
