"""The job's footprint beyond energy and CO2: water and the embodied impact of the hardware."""
