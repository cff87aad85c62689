"""The live sales dashboard: a web page over the warehouse star schema, pushed by Server-Sent Events."""
