"""The content the families work on (articles, their versions and translations): tables and
migrations shared by the ai, search and plugins families. Not a queue family: no handlers."""
