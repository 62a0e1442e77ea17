"""Judge-exact evaluation: question files, scoring, and the clients that time a server like the judge."""
