"""The foundation every layer uses: errors, callbacks, configs, devices, input checks, normalisation, records."""
