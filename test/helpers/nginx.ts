// The nginx harness lives in bench/ (the benchmark serves its store with it too; bench code
// never imports from test/). Re-exported here for the tests.
export * from '../../bench/nginx'
