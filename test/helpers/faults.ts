// The fault server lives in bench/ (the soak drives it too; bench code never imports from
// test/). Re-exported here for the tests.
export * from '../../bench/faults'
