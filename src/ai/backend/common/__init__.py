"""Code shared by the client and every server: signing, resource slots, problems, config."""
