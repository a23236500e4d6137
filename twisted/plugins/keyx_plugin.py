from twisted.application.service import ServiceMaker

keyx = ServiceMaker(
    "twisted-keyx",
    "twisted_keyx.service.tap",
    "Key-exchange handshakes (Diffie-Hellman on 7777, EKE on 8088, OPAQUE on 8089) "
    "as a network service.",
    "keyx",
)
