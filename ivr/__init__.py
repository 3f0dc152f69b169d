"""The IVR: menus as data (ivr/menus/*.yaml) and a pure state-machine engine that drivers run."""
