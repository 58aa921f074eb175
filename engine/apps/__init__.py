"""The science demos behind `crema demo ...`: hep (the HEP calorimeter-image classifier) and
climate (semi-supervised extreme-weather detection). Each module has main(argv) -> int."""
