# Registers the calibration plugin for runs from a checkout; an installed package also
# registers it through its pytest11 entry point under the same name, so it loads once.
pytest_plugins = ["calibration.plugin"]
