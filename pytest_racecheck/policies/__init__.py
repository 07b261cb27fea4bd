"""How racers are driven through their points: stress, meet_at, pause, schedule, explore."""
