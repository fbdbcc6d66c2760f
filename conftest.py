# Registers the calibration plugin for runs from a checkout; an installed package also
# registers it through its pytest11 entry point under the same name, so it loads once.
pytest_plugins = ["calibration.plugin"]


def pytest_addoption(parser):
    # In this checkout, the short forms of the plugin's options (--quick, --device, --threads...)
    # too; elsewhere only the --calibrate- ones exist, so that they clash with nothing.
    from calibration.plugin import add_short_options

    add_short_options(parser)
