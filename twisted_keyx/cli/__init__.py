"""The command line: keyx-client, keyx-admin, keyx-lab and the chat console."""
