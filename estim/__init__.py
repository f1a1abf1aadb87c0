"""estim: an electrostimulation protocol controller for pelvic-floor therapy.

Research and engineering software. It is not a certified medical device.
"""

__version__ = "0.1.0"

import logging

# A library does not print: applications (and `estim -v`) choose where logs go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
