-- The Journeys database beside Temporal's own, on the same PostgreSQL server.
CREATE USER journeys WITH PASSWORD 'journeys';
CREATE DATABASE journeys OWNER journeys;
