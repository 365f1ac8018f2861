//! Dependency order for things that read other things (models reading models, KPIs reading
//! KPIs): depth first, each once, dependencies before dependents, cycles reported.

/// What can go wrong while ordering.
#[derive(Debug, PartialEq, Eq)]
pub enum OrderError<E> {
    /// The names along the cycle, the first repeated at the end.
    Cycle(Vec<String>),
    /// Looking up a node's dependencies failed.
    Lookup(E),
}

/// `start` and everything it depends on (transitively), dependencies first.
pub fn dependency_order<E>(
    start: &str,
    mut deps: impl FnMut(&str) -> Result<Vec<String>, E>,
) -> Result<Vec<String>, OrderError<E>> {
    fn visit<E>(
        name: &str,
        deps: &mut dyn FnMut(&str) -> Result<Vec<String>, E>,
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Result<(), OrderError<E>> {
        if done.iter().any(|d| d == name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            let mut cycle = stack.clone();
            cycle.push(name.to_owned());
            return Err(OrderError::Cycle(cycle));
        }
        stack.push(name.to_owned());
        for d in deps(name).map_err(OrderError::Lookup)? {
            visit(&d, deps, stack, done)?;
        }
        stack.pop();
        done.push(name.to_owned());
        Ok(())
    }
    let mut done = Vec::new();
    visit(start, &mut deps, &mut Vec::new(), &mut done)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn orders_and_finds_cycles() {
        let g: HashMap<&str, Vec<&str>> =
            HashMap::from([("c", vec!["b", "a"]), ("b", vec!["a"]), ("a", vec![])]);
        let deps = |n: &str| Ok::<_, ()>(g[n].iter().map(|s| s.to_string()).collect());
        assert_eq!(dependency_order("c", deps).unwrap(), ["a", "b", "c"]);
        let cyc: HashMap<&str, Vec<&str>> = HashMap::from([("a", vec!["b"]), ("b", vec!["a"])]);
        let deps = |n: &str| Ok::<_, ()>(cyc[n].iter().map(|s| s.to_string()).collect());
        assert_eq!(
            dependency_order("a", deps),
            Err(OrderError::Cycle(vec!["a".into(), "b".into(), "a".into()]))
        );
        assert_eq!(
            dependency_order("x", |_| Err::<Vec<String>, _>("nope")),
            Err(OrderError::Lookup("nope"))
        );
    }
}
