//! Aligned text tables for people: a header row, then one row per item, columns separated by
//! at least two spaces, the last column not padded.

/// The table as text, one line per row, each ending in a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (index, width) in widths.iter().enumerate() {
            let cell = row.get(index).map(String::as_str).unwrap_or("");
            // A cell never breaks the row: newlines and tabs become spaces.
            let cell: String = cell
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            line.push_str(&cell);
            if index + 1 < columns {
                line.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[&str], rows: &[&[&str]], expected: &str) {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| row.iter().map(|c| c.to_string()).collect())
            .collect();
        assert_eq!(table(headers, &rows), expected);
    }

    #[test]
    fn columns_align_on_the_widest_cell() {
        check(
            &["NAME", "ENV", "IMAGE", "CPU", "MEM"],
            &[
                &["range", "python", "", "0.1", "256Mi"],
                &["multiply-java", "java", "repo/img:1", "2", "1Gi"],
            ],
            "NAME           ENV     IMAGE       CPU  MEM\n\
             range          python              0.1  256Mi\n\
             multiply-java  java    repo/img:1  2    1Gi\n",
        );
    }

    #[test]
    fn no_rows_is_the_header_alone() {
        check(&["NAME", "NODES"], &[], "NAME  NODES\n");
    }

    #[test]
    fn short_rows_and_control_characters() {
        check(
            &["JOB", "STATUS", "DETAILS"],
            &[&["j1", "failed"], &["j2", "active", "line\none"]],
            "JOB  STATUS  DETAILS\nj1   failed\nj2   active  line one\n",
        );
    }

    #[test]
    fn wide_characters_count_once() {
        check(&["A", "B"], &[&["é", "x"]], "A  B\né  x\n");
    }
}
