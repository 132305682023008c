"""ccTalk: coin acceptor and bill validator on a 9600-baud single-wire bus."""
