from twisted.application.service import ServiceMaker

keyx = ServiceMaker(
    "twisted-keyx",
    "twisted_keyx.service.tap",
    "Key-exchange handshakes (Diffie-Hellman, EKE) as a network service.",
    "keyx",
)
