"""What the password handshakes (EKE, OPAQUE, and the next ones) share:
user names and the generic failure line (:mod:`.names`), the bytes a
password stands for (:mod:`.password`), the failures of a login
(:mod:`.failures`), the decisions a login machine hands its adapter
(:mod:`.decisions`) and the Twisted factories that serve a login and its
chat (:mod:`.protocol`).

A layer of its own, between the handshakes and the chat (setup.cfg's
layers contract): a handshake imports it, never another handshake.
"""
