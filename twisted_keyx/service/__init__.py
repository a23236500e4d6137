"""The service: twistd options and service, connection limits, the guess throttle, workers and stores."""
