"""Journey instances: their contract (`contract`: what an instance is started with, returns and
answers, its id and the names it is registered under) and the one way one starts (`start`)."""
