"""The EKE password handshake (Bellovin and Merritt, 1992) and its encrypted chat."""
