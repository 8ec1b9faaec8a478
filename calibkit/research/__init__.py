"""Study scale algorithms on saved statistics: compare, plot, report, stability and sensitivity."""
