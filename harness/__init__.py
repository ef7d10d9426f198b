"""pinloop: a hardware-in-the-loop test harness for My Number card readers.

Rooms of the package (one role each):

- ``harness.apdu``      APDU model: command/response encoding, status-word table, PIN masking
- ``harness.emulator``  the software-emulated My Number card (card OS, state store, defects)
- ``harness.config``    YAML with line numbers plus schema validation, for every config file
- ``harness.cli``       the ``pinloop`` command
- ``harness.errors``    the exception tree shared by all of them
"""

__version__ = "0.1.0"
