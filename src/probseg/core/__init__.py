"""The foundation every layer uses: errors, callbacks, configs, devices, input checks, normalisation, records.

``__version__`` lives here, the lowest layer, so that records can name it
without importing the whole package.
"""

__version__ = "0.1.0"
