"""Security: listeners and their protocols, TLS, SASL (PLAIN, SCRAM), SCRAM credentials,
the ACL authorizer and the audit trail. The pure cores (listener parsing, SCRAM, the
authorizer) have fast unit tests; broker.server wires them into each connection."""
